"""The service layer: SkyPilotService and the executors it drives."""

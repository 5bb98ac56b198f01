"""Executors: where a rendered SkyPilot task runs. `protocol` is the seam; `local` runs it on
this machine, `skypilot` as a SkyPilot managed job (through the SDK calls in `sky_sdk`)."""

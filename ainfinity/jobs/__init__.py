"""The job domain: SkyPilotService (every request about a job), the reconciler that drives
jobs to the end, and what they read and decide with (inputs, task rendering, run output,
failures, progress, event feed, webhooks)."""

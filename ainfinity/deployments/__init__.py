"""Deployments: a model served from replicas of its own, a pinned local worker or a SkyServe
service, behind the same `/v1` gateway."""

"""What jobs and deployments cost: catalog prices, cost so far, usage per key and day."""

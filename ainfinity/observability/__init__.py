"""What operators watch: Prometheus metrics of requests and jobs."""

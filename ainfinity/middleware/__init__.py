"""What every request passes through: auth, CORS, request logging, rate limiting."""

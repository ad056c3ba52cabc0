"""What the service says about itself: metrics and log lines."""

"""editserve service: HTTP front end and command line. Never imports torch."""

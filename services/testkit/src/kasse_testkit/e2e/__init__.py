"""The whole shop for end-to-end tests: services as processes, shopper journeys, a contracts-only subscriber."""

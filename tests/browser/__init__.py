"""Browser tests of the operator dashboard (gateway/static) in headless Chromium."""

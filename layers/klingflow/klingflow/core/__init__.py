"""The domain, pure: kinds and their rules, media probing, the job record, states, errors."""

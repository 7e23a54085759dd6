"""AWS and HTTP plumbing: table, bucket, queues, events, parameters, safe HTTP, the router."""

"""`make scale`: DynamoDB partition load, Lambda concurrency and AWS cost per job, measured."""

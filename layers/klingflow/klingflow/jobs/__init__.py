"""The job records: the store, endings, elements and submissions."""

"""What a job costs (pricing), the day's budget (ledger), what becomes of a reservation."""

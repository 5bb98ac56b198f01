"""The store: the JSON job records (`job_store`), their file layout (`job_files`), the
derived list index (`job_index`), the event journal and Idempotency-Key answers."""

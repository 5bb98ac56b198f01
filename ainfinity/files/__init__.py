"""Files: training data uploaded through the OpenAI-compatible `/v1/files`, kept inside the
data directories, validated once stored, and named by `file-...` ids that fine-tuning jobs
take as `training_file` and `validation_file`."""

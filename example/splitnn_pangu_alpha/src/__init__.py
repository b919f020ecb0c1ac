"""PanGu-alpha example sources (model, tokenizer, data pipeline)."""

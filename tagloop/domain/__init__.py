"""The domain: titles, tags, the model, its evaluation, its bundle and the messages of the loop."""

"""Copies of a deletion request in the data the model keeps: found, reported, forgotten too."""

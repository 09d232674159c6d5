"""From your own photos to the model's inputs: framing a person, estimating keypoints and parsing (a library that
infer.py, scripts/prepare_photos.py and a browser app import; it imports nothing from the entry points)."""

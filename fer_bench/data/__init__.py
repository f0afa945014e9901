"""Data: class names, folder and CSV readers with their decode cache, synthetic faces, integrity checks."""

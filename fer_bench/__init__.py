"""fer_bench: does frozen-base transfer learning beat a small scratch CNN on FER2013?"""

__version__ = "0.1.0"

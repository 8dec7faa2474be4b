"""What every SkinTriage service shares, written once: JSON logging, request ids, the error
handlers and internal-token auth. Services import this package and `contracts`, never each other."""

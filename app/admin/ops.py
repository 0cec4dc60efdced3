"""The live operations dashboard of the realtime layer."""

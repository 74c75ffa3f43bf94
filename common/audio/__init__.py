"""Shared audio code: reading and writing sound files, and the features the audio apps share."""

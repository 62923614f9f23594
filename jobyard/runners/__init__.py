"""Runners start and stop instances; the engine never knows which one it has."""

"""The answer path: retrieve -> pack -> generate -> verify. Plain Python, no Django."""

"""St-RKM: the Stiefel restricted kernel machine (Pandey, Fanuel, Schreurs & Suykens 2022)."""

"""The Deep Rendering Mixture Model (Patel, Nguyen & Baraniuk 2016) and its shallow RMM."""

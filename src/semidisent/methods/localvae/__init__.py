"""Local-decoder VAEs (Zhang, Xiao, Paige & Barber 2022): a PixelCNN decoder whose receptive field
is a small causal window, so the global structure of an image has to go through the latent."""

"""disentanglement_lib's semi-supervised family: :mod:`.method` (the registered methods),
:mod:`.models`, :mod:`.regularisers`, :mod:`.networks`, :mod:`.params` (torch-free). Importing
the package itself imports nothing, so that the params schema can read :mod:`.params`."""

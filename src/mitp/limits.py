"""The ranges every path that takes a text length or an image size checks (configs, the Preprocessor, a model
folder's config.json, onnx.json); a module of its own so that the ONNX runtime reads them without the config
machinery."""

TEXT_LENGTH_RANGE = (2, 65536)  # a start and an end token at least; no text tower has more positions
IMAGE_SIZE_RANGE = (14, 4096)  # one ViT patch at least; a larger side takes minutes and gigabytes an image

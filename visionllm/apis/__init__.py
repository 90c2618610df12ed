"""Using a trained VisionLLM from Python: predict on images, draw the predictions."""

from visionllm.apis.inference import ObjectPrediction, Prediction, Predictor, list_images, load_rgb
from visionllm.apis.visualization import draw_predictions

__all__ = ["ObjectPrediction", "Prediction", "Predictor", "draw_predictions", "list_images", "load_rgb"]

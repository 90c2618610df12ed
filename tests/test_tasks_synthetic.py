"""The task layer on the real synthetic shapes dataset (COCO JSON with colour/size attributes)."""

import json

import numpy as np
import pytest
from transformers import AutoTokenizer

from visionllm.data.synthetic import CLASSES, generate_synthetic
from visionllm.instructions import resolve_instruction
from visionllm.pretrained import minilm_dir
from visionllm.tasks import TASKS, ImageAnnotations, NoReferentError, Task, build_task
from visionllm.vocab import TaskVocab


@pytest.fixture(scope="module")
def synthetic_images(tmp_path_factory):
    paths = generate_synthetic(
        tmp_path_factory.mktemp("shapes"), num_images=12, image_size=96, val_fraction=0.0
    )
    coco = json.loads(paths["train"].read_text())
    category_ids = [c["id"] for c in coco["categories"]]
    assert [c["name"] for c in coco["categories"]] == list(CLASSES)
    images = []
    for image in coco["images"]:
        anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        scale = 128 / image["width"]  # resized to the model input, which is also the canvas
        images.append(ImageAnnotations.from_coco(anns, category_ids, 128, (scale, scale)))
    return images


def test_every_task_round_trips_sampled_requests_on_synthetic_images(synthetic_images):
    vocab = TaskVocab(AutoTokenizer.from_pretrained(minilm_dir()))
    rng = np.random.default_rng(0)
    for name in [name for name, task in TASKS.items() if issubclass(task, Task)]:
        task = build_task(name, vocab)
        for annotations in synthetic_images:
            try:
                request = task.sample_request(CLASSES, annotations, rng)
            except NoReferentError:  # nothing to ask about in this image
                continue
            targets = task.encode_objects(request, annotations, CLASSES)
            result = task.parse(task.target_sequence(targets), request, annotations.canvas_size)
            assert not result.dropped and result.finished
            assert [obj.class_index for obj in result.objects] == targets.class_index.tolist()
            if name in ("detect", "segment"):
                wanted = sum(CLASSES[label] in request.classes for label in annotations.labels)
            elif name == "detect_like":  # every instance of the prompt's class
                wanted = int((annotations.labels == annotations.labels[request.target_indices[0]]).sum())
            else:  # ground, point_segment: the one instance meant
                wanted = 1
            assert len(result.objects) == wanted
            if name == "ground":  # a user asking with the generated phrase gets the same request
                [phrase] = request.classes
                assert resolve_instruction(f"Where is {phrase}?").classes == [phrase]

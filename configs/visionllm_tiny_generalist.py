# The generalist: one tiny model and one checkpoint for detection, segmentation and grounding plus the
# region, point and image questions (answers in words), trained on 1,000 synthetic images. Validation
# scores every task on the val split: COCO bbox/segm mAP, and each question task by its own metric
# (TaskExamplesMetric; `tools/test.py` prints the table). README: `tools/train.py ... --time-budget 20`.
_base_ = [
    "_base_/models/visionllm_tiny.py",
    "_base_/schedules/adamw.py",
    "_base_/runs/synthetic_1k_questions.py",
]

optim_wrapper = dict(optimizer=dict(lr=2e-3, weight_decay=0.0))  # visionllm_tiny_synthetic.py's

#: the tasks scored by their own examples at validation (detection and segmentation by COCO mAP)
question_tasks = dict(
    region_classify=dict(weight=2.0),
    region_describe=dict(weight=1.0),
    region_compare=dict(weight=1.0),
    point_classify=dict(weight=1.0),
    point_segment=dict(weight=1.0, num_points=16),
    detect_like=dict(weight=1.0),
    caption=dict(weight=0.5),
    count=dict(weight=0.5),
    color_question=dict(weight=1.0),
)
model = dict(
    tasks=dict(
        detect=dict(weight=1.0),
        segment=dict(weight=1.0, num_points=16),
        ground=dict(weight=0.5),
        **question_tasks,
    ),
    eval_tasks=tuple(question_tasks),
    # two more questions in words per image, read from its own tokens (bench: extra_questions_10min.json)
    extra_questions=2,
    # seeded slots read the maps at their seed's points and answer in offsets from the seed (SlotRefiner):
    # segm mAP 0.18 -> 0.28-0.30 at 20 minutes (docs/benchmarks.md, run 9)
    slot_vertex_features=True,
    slot_offset_radius=16,
)

"""pgmm-data's plugin: registers its datasets and the ``data`` command (import-cheap: no torch)."""

from __future__ import annotations

from pgmm_core.hookspecs import hookimpl
from pgmm_data.configs import (
    CocoCaptionConfig,
    CocoRetrievalConfig,
    Flickr30kRetrievalConfig,
    JsonlCaptionsConfig,
    SyntheticShapesConfig,
    VgCaptionConfig,
    WebdatasetCaptionsConfig,
)
from pgmm_data.synthetic_qa_configs import SyntheticShapesChatConfig, SyntheticShapesVqaConfig
from pgmm_data.vqa_configs import (
    GqaConfig,
    JsonlConversationsConfig,
    LlavaConversationsConfig,
    OkVqaConfig,
    Vqav2Config,
)


@hookimpl
def pgmm_register_datasets(registrar):
    registrar.add("coco_caption", "pgmm_data.datasets:build_coco_caption", CocoCaptionConfig,
                  description="COCO captions, Karpathy splits (LAVIS layout and files)")
    registrar.add("vg_caption", "pgmm_data.datasets:build_vg_caption", VgCaptionConfig,
                  description="Visual Genome region captions (LAVIS vg_caption.json)")
    registrar.add("jsonl_captions", "pgmm_data.datasets:build_jsonl_captions", JsonlCaptionsConfig,
                  description='your own {"image": path, "caption": str | [str]} lines')
    registrar.add("coco_retrieval", "pgmm_data.retrieval:build_retrieval", CocoRetrievalConfig,
                  description="COCO Karpathy image-text retrieval test sets (LAVIS files, 5 captions per image)")
    registrar.add("flickr30k_retrieval", "pgmm_data.retrieval:build_retrieval", Flickr30kRetrievalConfig,
                  description="Flickr30k image-text retrieval test sets (LAVIS flickr30k_*.json)")
    registrar.add("synthetic_shapes", "pgmm_data.synthetic:build_synthetic_shapes", SyntheticShapesConfig,
                  description="procedural coloured shapes with captions (deterministic, no files)")
    registrar.add("vqav2", "pgmm_data.vqa:build_coco_vqa", Vqav2Config,
                  description="VQAv2 questions on COCO (official files or LAVIS annotation JSON)")
    registrar.add("okvqa", "pgmm_data.vqa:build_coco_vqa", OkVqaConfig,
                  description="OK-VQA questions on COCO (official files or LAVIS annotation JSON)")
    registrar.add("gqa", "pgmm_data.vqa:build_gqa", GqaConfig,
                  description="GQA balanced questions (LAVIS files), scored by exact match")
    registrar.add("llava_conversations", "pgmm_data.conversations:build_llava_conversations",
                  LlavaConversationsConfig, description="visual instruction conversations in LLaVA's JSON")
    registrar.add("jsonl_conversations", "pgmm_data.conversations:build_jsonl_conversations",
                  JsonlConversationsConfig,
                  description='your own {"image", "conversation": [{"role", "content"}]} lines')
    registrar.add("webdataset_captions", "pgmm_data.webdataset:build_webdataset_captions", WebdatasetCaptionsConfig,
                  description="image-caption pairs streamed from WebDataset tar shards (img2dataset layout, pipe:)")
    registrar.add("synthetic_shapes_vqa", "pgmm_data.synthetic_qa:build_synthetic_shapes_vqa",
                  SyntheticShapesVqaConfig,
                  description="questions on the synthetic shapes' colour, shape and place (VQA items, no files)")
    registrar.add("synthetic_shapes_chat", "pgmm_data.synthetic_qa:build_synthetic_shapes_chat",
                  SyntheticShapesChatConfig,
                  description="conversations about the synthetic shapes (chat items, no files)")


@hookimpl
def pgmm_register_commands(registrar):
    registrar.add("data", help="inspect datasets or shards (data check --config FILE | --shards DIR); "
                  "write shards (data shard CONFIG --out DIR --samples-per-shard N)",
                  configure="pgmm_data.check:configure", run="pgmm_data.check:run")

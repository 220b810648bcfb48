"""Object detection: Plain-DETR with BoxRPB (Lin et al., ICCV 2023, arXiv 2308.01904) on COCO.

- :mod:`.models`: ``plain_detr_swinv2_s_boxrpb``, ``plain_detr_swinv2_s_ape``, ``plain_detr_demo``,
  ``plain_detr_demo_ape`` (SwinV2 backbone, one stride-16 map, a global decoder with BoxRPB);
- :mod:`.data`: the COCO reader, DETR's augmentation, padded batches, ``CocoDetectionDataModule``
  with an offline generator of synthetic shapes in the COCO format;
- :mod:`.matcher`: Hungarian matching on focal class, L1 and GIoU costs;
- :mod:`.losses`: ``SetCriterion``: focal + L1 + GIoU on every decoder layer, the two-stage proposals
  and the one-to-many group of hybrid matching;
- :mod:`.metrics`: ``postprocess`` (top-100) and ``CocoMeanAP`` (pycocotools' COCOeval), results json;
- :mod:`.module`: ``PlainDETRDetector``, the LightningModule;
- :mod:`.figures`: the test figures (boxes, one query's cross-attention).

Importing this package imports nothing heavy; ``zoo.create_model`` imports ``.models`` on demand.
"""

"""BLIP-2 stage 1: Q-Former pretraining (ITC, ITM, ITG) with the Q-Former's text side and heads (LAVIS
``Blip2Qformer``), and its zero-shot image-text retrieval evaluation.

``model.connector.text_side: true`` on the ``qformer`` connector builds :class:`QFormerWithTextSide`,
which the ITC/ITM/ITG objective and the retrieval evaluation use through ``model.connector``:

=========================================================  ===================================
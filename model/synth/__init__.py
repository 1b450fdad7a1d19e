"""Synthetic multi-person scenes with exact COCO-17 keypoints (``detpose synth``).

``figures``: the articulated 2-D figure, its proportions and pose sampling. ``scenes``: placing
figures, rendering them with a person-id buffer, keypoint visibility and the crowd index.
``dataset``: a numbered image set and its COCO person-keypoints file. See ``docs/synth.md``.
"""

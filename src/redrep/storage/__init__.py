"""Files: atomic writes and folder locks (:mod:`.io`), representation sets (:mod:`.repset`), the
torch-free reader of ``.pt`` files (:mod:`.ptfile`), analysis results on disk (:mod:`.results`)
and the synthetic set with a known clone structure (:mod:`.synthetic`). Imports the core only."""

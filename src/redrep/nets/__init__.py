"""Networks (torch): data sets (:mod:`.data`), models (:mod:`.models`), training (:mod:`.train`),
extraction of the last hidden layer (:mod:`.extract`) and ensembles (:mod:`.ensemble`).
Needs the ``train`` extra (torch, scikit-learn, mnist1d)."""

"""`mmfm synth`: a synthetic multi-site cohort (DICOM, FHIR bulk export, omics) with known ground truth."""

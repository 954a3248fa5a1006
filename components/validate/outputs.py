"""The names of the validate stage's files, apart from the stage itself: what reads them (the
preprocess stage's declared input, the CLI's input checks) must not pay for importing Great
Expectations."""

RESULT_JSON = "result.json"  # the verdict and every failed check: preprocess depends on it
SUMMARY_TXT = "summary.txt"
DATA_DOCS = "data_docs"  # the site's folder, beside the output folder (not a DVC output)

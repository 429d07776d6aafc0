"""Identity reads: codes (zxing-cpp) on a part's code region, GS1 element strings, field validation, and
the label generator the tests and `lineguard ocr eval` measure them on."""

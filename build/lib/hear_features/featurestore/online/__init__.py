"""The online store: the Feast interface (:mod:`.store`), its SQLite tables and filter
translator (:mod:`.sqlite`), the conversion of Feast's rows (:mod:`.rows`) and the
encoding of features (:mod:`.codec`)."""

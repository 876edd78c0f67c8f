-- A command on one model type reads that type's rows alone (registry.TYPE_SQL): its versions
-- in the order they were registered come from this index, with no sort and no other type read.
CREATE INDEX versions_type_ord ON versions (model_type, ord);

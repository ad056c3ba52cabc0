"""Archive, purge and restore of whole days: the file format (`format`), durable private
files (`files`), day files (`day_files`), the merge of a day archived again (`merge`)
and the commands (`commands`)."""

//! The applied state: the record of what was applied and succeeded.

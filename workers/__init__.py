"""Worker processes: dramatiq workers delivering messages to subscriptions."""

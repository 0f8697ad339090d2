"""The scheduler process: releases due messages and runs housekeeping jobs."""

"""Courses worker: capacity, seats and access grants per course, in schema `courses`.

Documented test values (deterministic business rules):
- a course with capacity 0 (or every seat taken) has no capacity;
- an unknown course id has no capacity ("unknown course");
- a course seeded with `access_open=False` refuses GrantCourseAccess ("course access is closed"),
  which drives an enrollment through compensation.
`consumers.courses.handlers.seed_course` creates or updates a course for demos and tests.
"""

"""The stroke-painting web page (``sdekit serve``): one static page, a Starlette app served by uvicorn,
and the job queue and tasks underneath it."""

"""Streamed multipart/form-data parsing with limits enforced while reading,
and bulk uploads passed on to a model service in bounded chunks.

Starlette's ``request.form()`` spools every file to completion before the
route sees it, so an oversized upload would be read in full before it could
be refused. Here the body is fed chunk by chunk to python-multipart's
low-level parser and the request is refused (413) as soon as a declared
Content-Length or the bytes read pass the request-body limit, one file part
grows past the per-file limit, or a part beyond the files-per-request limit
begins. The gateway checks only what is cheap (size and magic bytes);
decoding is the services' job.

Files never sit whole in memory: each goes to a spooled temporary file that
keeps at most :data:`SPOOL_MEMORY_BYTES` in memory (and a request at most
:data:`REQUEST_MEMORY_BYTES` over all its files) and moves to disk beyond.
:func:`call_in_chunks` then reads a bulk upload back one gRPC call's worth
at a time, so the gateway holds about ``bulk_chunk_bytes`` x
``bulk_calls_in_flight`` of image bytes however large the upload is.

The modules: ``files`` (an uploaded file, its limits and checks),
``multipart`` (the streamed parser), ``chunks`` (bulk uploads to a model
service), ``openapi`` (the multipart bodies as /openapi.json shows them).
"""

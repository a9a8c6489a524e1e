"""URL ingestion: fetch pages through the egress guard (``fetch``), honour robots.txt (``robots``), follow
same-site links to a depth (``crawl``), render dynamic pages in Chromium when asked (``browser``), and the
``ingest_url`` job that stores each page as a document whose source is its URL (``job``)."""

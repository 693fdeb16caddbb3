"""Labels: annotations, labeling tasks and readers, formats, agreement, consensus, label sets.

:mod:`.model` holds the in-memory annotation model every other part of this layer speaks (formats read
into it and write from it; the database stores it; agreement and consensus compare it).
"""

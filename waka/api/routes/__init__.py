"""One module per Heroku resource; each exports `routes(platform)`."""

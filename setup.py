"""Package setup driven by settings.ini (nbdev 2 layout); parses requirements without pkg_resources."""
from configparser import ConfigParser
import shlex
import setuptools

cfg = ConfigParser(delimiters=['='])
cfg.read('settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']

def _reqs(key: str) -> list[str]:
    "Split a space-separated requirement list from settings.ini (quoted items allowed)."
    return shlex.split(cfg.get(key, '').strip())

licenses = {'apache2': ('Apache Software License 2.0', 'OSI Approved :: Apache Software License')}
lic = licenses[cfg['license'].lower()]
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable', '6 - Mature', '7 - Inactive']
console_scripts = [s for s in cfg.get('console_scripts', '').split() if s]

setuptools.setup(
    name=cfg['lib_name'],
    version=cfg['version'],
    license=lic[0],
    classifiers=['Development Status :: ' + statuses[int(cfg['status'])],
                 'Intended Audience :: ' + cfg['audience'].title(),
                 'License :: ' + lic[1],
                 'Natural Language :: ' + cfg['language'].title(),
                 'Programming Language :: Python :: 3.11'],
    url=cfg['git_url'],
    project_urls={'Source': cfg['git_url']},
    description=cfg['description'],
    keywords=cfg['keywords'].split(),
    author=cfg['author'],
    author_email=cfg['author_email'],
    packages=setuptools.find_packages(include=['oi_ml', 'oi_ml.*']),
    include_package_data=True,
    package_data={'oi_ml': ['templates/*.ipynb']},
    install_requires=_reqs('requirements'),
    extras_require={'dev': _reqs('dev_requirements'), 'catboost': ['catboost>=1.2']},
    python_requires='>=' + cfg['min_python'],
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    zip_safe=False,
    entry_points={'console_scripts': console_scripts, 'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
)
